"""Adapts a QgsProcessingFeedback to the engine's progress protocol."""


class FeedbackProgress:
    def __init__(self, feedback):
        self.feedback = feedback

    def step(self, done: int, total: int) -> None:
        if self.feedback is not None:
            self.feedback.setProgress(100.0 * done / max(total, 1))

    def cancelled(self) -> bool:
        return self.feedback is not None and self.feedback.isCanceled()

    def info(self, message: str) -> None:
        if self.feedback is not None:
            self.feedback.pushInfo(message)

    def warn(self, message: str) -> None:
        if self.feedback is not None:
            self.feedback.pushWarning(message)
