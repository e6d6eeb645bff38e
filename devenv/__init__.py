"""Development environment for spanstream: AWS emulators and test resources.

Not part of the runtime: tests, ``make emulators-up`` and the docker-compose
set-up use it. See `devenv.emulators` and `devenv.resources`.
"""

from devenv.emulators import (
    EmulatorError,
    Emulators,
    LocalStack,
    emulators_from_env,
)
from devenv.env import read_env_file, settings_to_env, write_env_file
from devenv.resources import (
    Resources,
    create_resources,
    create_stores,
    delete_resources,
    delete_stores,
)

__all__ = [
    "EmulatorError",
    "Emulators",
    "LocalStack",
    "Resources",
    "create_resources",
    "create_stores",
    "delete_resources",
    "delete_stores",
    "emulators_from_env",
    "read_env_file",
    "settings_to_env",
    "write_env_file",
]
