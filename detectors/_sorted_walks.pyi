import numpy as np
import numpy.typing as npt

def ks_extremes(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> tuple[float, float]: ...
def merge_disjoint(
    a_keys: npt.NDArray[np.uint64],
    a_rows: npt.NDArray[np.uint8],
    b_keys: npt.NDArray[np.uint64],
    b_rows: npt.NDArray[np.uint8],
    keys: npt.NDArray[np.uint64],
    rows: npt.NDArray[np.uint8],
) -> int: ...
