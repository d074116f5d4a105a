from services.validator.service import SERVICE, ValidatorService
from shared.runtime import main

if __name__ == "__main__":
    main(SERVICE, ValidatorService)
