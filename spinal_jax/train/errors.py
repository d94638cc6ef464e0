"""The trainer's errors, importable without the trainer (the command line catches them)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped and its last good checkpoint was kept."""


class RunConfigMismatch(ValueError):
    """The run directory holds a run of a different config."""
