"""One error hierarchy for the whole package.

Every message says what went wrong *and* how to fix it. Expected user mistakes (bad config,
bad CSV rows, empty searches) raise a subclass of :class:`MRVError`; the CLI prints the
message without a traceback and exits non-zero.
"""

from __future__ import annotations

__all__ = [
    "AccountingError",
    "ConfigError",
    "CovariateMismatch",
    "ImageryError",
    "ModelError",
    "MRVError",
    "NoImageryFound",
    "SampleError",
    "StockError",
    "SubmissionRejected",
    "VerificationError",
]


class MRVError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(MRVError):
    """A configuration file is missing, malformed or inconsistent."""


class ImageryError(MRVError):
    """Imagery could not be found, read or composited."""


class NoImageryFound(ImageryError):
    """A search returned no usable scene for the requested area and dates."""


class SampleError(MRVError):
    """A soil-sample file or record cannot be used."""


class SubmissionRejected(SampleError):
    """A submitted sample file could not be parsed at all and was rejected whole."""


class StockError(MRVError):
    """Soil organic carbon stock arithmetic received inconsistent inputs."""


class ModelError(MRVError):
    """A model cannot be trained, loaded or applied."""


class CovariateMismatch(ModelError):
    """A stored model expects covariates that the covariate stack does not provide."""


class AccountingError(MRVError):
    """Field or project totals cannot be computed."""


class VerificationError(MRVError):
    """A run directory does not match its manifest or its recomputed numbers."""
