from .store import ResultsStore, summarize

__all__ = ["ResultsStore", "summarize"]
