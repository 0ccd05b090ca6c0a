from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

def siphash_strings(
    values: npt.NDArray[np.object_] | Sequence[object], key: bytes
) -> npt.NDArray[np.uint64]: ...
