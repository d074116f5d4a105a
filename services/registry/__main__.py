from services.registry.service import SERVICE, RegistryService
from shared.runtime import main

if __name__ == "__main__":
    main(SERVICE, RegistryService)
