from .store import ResultsStore, describe_diverged, diverged_runs, summarize

__all__ = ["ResultsStore", "describe_diverged", "diverged_runs", "summarize"]
