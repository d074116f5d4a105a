"""The validator service: structural checks, parity with the parent, task metrics with
confidence intervals, fairness, robustness and a deployment-readiness verdict.
``python -m services.validator``; see docs/validator.md."""
