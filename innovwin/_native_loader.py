"""Loads the C++ extension once; the package keeps working on numpy references without it."""
import warnings

try:
    from innovwin import _native as native  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only on a broken build
    native = None
    warnings.warn(
        f"innovwin: the C++ extension innovwin._native is not available ({error}); "
        "using the numpy reference paths (slower). Reinstall with `pip install -e .` to build it.",
        RuntimeWarning,
        stacklevel=2,
    )


def native_available() -> bool:
    """True when the compiled validators and search are in use."""
    return native is not None
