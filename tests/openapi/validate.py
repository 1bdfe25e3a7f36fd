"""Validates a served OpenAPI document against the official OpenAPI 3.1 schema
(bundled with openapi-spec-validator, so this works offline).

Usage: validate.py URL. Prints every error and exits 1 if there is any.
"""

import json
import sys
import urllib.request

from openapi_spec_validator import OpenAPIV31SpecValidator


def main() -> int:
    with urllib.request.urlopen(sys.argv[1]) as response:
        document = json.load(response)
    errors = list(OpenAPIV31SpecValidator(document).iter_errors())
    for error in errors:
        print(f"{'/'.join(map(str, error.absolute_path))}: {error.message}")
    print(f"{len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
