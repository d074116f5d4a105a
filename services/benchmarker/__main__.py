from services.benchmarker.service import SERVICE, BenchmarkerService
from shared.runtime import main

if __name__ == "__main__":
    main(SERVICE, BenchmarkerService)
