"""Reading TOML (run configs and sweep specs) with one clear error for a bad file."""
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, packaged as tomli
    import tomli as tomllib


def parse_toml(data: bytes, source: str) -> dict:
    """Parse TOML bytes; ``source`` names the file or preset in the error message."""
    try:
        return tomllib.loads(data.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"{source} is not valid TOML: {error}") from None


def read_toml(path, kind: str) -> dict:
    """Read and parse a TOML file; ``kind`` ("config", "sweep spec") names it in errors."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ValueError(f"cannot read {kind} {path}: {error.strerror or error}") from None
    return parse_toml(data, f"{kind} {path}")
