"""The flight recorder: events and traces of everything keepmail does."""

from .recorder import NullRecorder, Recorder, new_trace_id

__all__ = ["NullRecorder", "Recorder", "new_trace_id"]
