"""User-facing errors. Each message says what went wrong and how to fix it."""


class Mnv2BenchError(Exception):
    """Base class: the harness reports these without a traceback."""


class ConfigError(Mnv2BenchError):
    """A profile, option or name is invalid."""


class DataNotFoundError(Mnv2BenchError):
    """A dataset is not on disk and cannot be downloaded."""


class WeightsUnavailableError(Mnv2BenchError):
    """Pretrained weights cannot be found or loaded."""


class TrainingDivergedError(Mnv2BenchError):
    """The loss became NaN or infinite."""


class NotApplicable(Mnv2BenchError):
    """A technique does not apply to this model (e.g. FX cannot trace it); the case is
    skipped with this one-line reason, never crashed."""


class StorageError(Mnv2BenchError):
    """A cache or results folder cannot take a write (a full disk)."""


class StopsTheRun(Mnv2BenchError):
    """An error every later case would repeat (the store or the cluster is gone): the run
    stops at the first one, in one line."""


class StoreUnavailable(StorageError, StopsTheRun):
    """A shared artifact store that did not answer within its retry time: the run stops (an
    unreachable store is never taken for a missing or corrupt entry)."""


class ClusterLost(StopsTheRun):
    """The Dask scheduler stopped answering during a run."""


class InconsistentEntry(Mnv2BenchError):
    """A cached model whose record contradicts itself: changed after it was written."""
