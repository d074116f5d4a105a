from services.converter.service import SERVICE, ConverterService
from shared.runtime import main

if __name__ == "__main__":
    main(SERVICE, ConverterService)
