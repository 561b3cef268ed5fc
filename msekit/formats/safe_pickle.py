"""Loading pickles without running their code.

A pickle names callables that ``pickle.load`` imports and calls, so a crafted file can run any
command (e.g. ``os.system``). Dataset pickles (MMSA, the MSE-Adapter item lists) only need
numpy arrays inside builtin containers, so by default they are read with ``SafeUnpickler``,
which resolves nothing but numpy's array reconstruction and builtin containers and refuses
every other name. ``trust=True`` (``--trust-pickle`` on the CLI) uses the plain unpickler for
files the user vouches for.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from msekit.errors import MsekitError

# (module, name) pairs a dataset pickle may reference. numpy 2 renamed numpy.core to numpy._core;
# both spellings appear in files in the wild.
_NUMPY = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}
_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int",
             "float", "complex", "bool", "slice", "range"}
_COLLECTIONS = {("collections", "OrderedDict"), ("collections", "defaultdict")}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and builtin containers and refuses anything else.

    Raises:
        MsekitError: the pickle references another class or function (named in the message).
    """

    def __init__(self, file: Any, source: str = "pickle") -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module == "builtins" and name in _BUILTINS) or (module, name) in _COLLECTIONS:
            return super().find_class(module, name)
        if (module, name) in _NUMPY:
            import numpy as np

            if module.startswith("numpy.core") and int(np.__version__.split(".")[0]) >= 2:
                module = module.replace("numpy.core", "numpy._core", 1)  # avoid the shim's warning
            return super().find_class(module, name)
        raise MsekitError(
            f"{self.source}: refused to load {module}.{name}: a pickle may run code when loaded, "
            "and only numpy arrays and builtin containers are allowed; if you trust this file, "
            "pass --trust-pickle"
        )


def load_pickle(path: str | Path, trust: bool = False) -> Any:
    """Load a pickle file, restricted to numpy arrays and builtin containers unless trusted.

    Args:
        path: the .pkl file.
        trust: use the unrestricted unpickler (runs whatever code the file names).

    Raises:
        MsekitError: a refused reference, or a file that is not a readable pickle.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:  # streamed: a 4 GB pickle is not held twice
            if trust:
                return pickle.load(fh)  # the user vouched for this file
            return SafeUnpickler(fh, source=str(path)).load()
    except MsekitError:
        raise
    except MemoryError:
        raise MsekitError(f"{path}: loading it needs more memory than there is (a corrupt file "
                          "asking for a huge array, or a pickle too big for this machine)") from None
    except OSError as e:
        raise MsekitError(f"{path}: cannot read it ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - any failure inside the unpickler means a bad file
        raise MsekitError(f"{path}: not a readable pickle ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
