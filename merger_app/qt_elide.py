"""Widgets that cut their text with '…' when the window is too small, instead of clipping it.

Qt clips a combo box's current text at its edge and a word-wrapped label at its bottom,
so in a small window a method name or a hint just stops mid-word (a GUI trial at
500×300). These show as much as fits, end it with '…', and keep the whole text: a
label's is its tooltip, a combo's is its list.
"""

from __future__ import annotations

from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QFontMetrics, QPaintEvent
from PySide6.QtWidgets import QComboBox, QLabel, QStyle, QStyleOptionComboBox, QStylePainter

ELLIPSIS = "…"
_WRAP = Qt.TextFlag.TextWordWrap


def fits(metrics: QFontMetrics, text: str, width: int, height: int) -> bool:
    """Does `text`, word-wrapped at `width`, fit in `height`?"""
    if width <= 0 or height <= 0:
        return not text
    return metrics.boundingRect(QRect(0, 0, width, 1 << 20), _WRAP, text).height() <= height


def elide_wrapped(metrics: QFontMetrics, text: str, width: int, height: int) -> str:
    """The longest start of `text` (cut between words where it can) that, with '…' after
    it, fits word-wrapped in width × height; `text` itself when it fits."""
    if fits(metrics, text, width, height):
        return text
    low, high = 0, len(text)  # the longest prefix that fits lies in [low, high)
    while low < high - 1:
        mid = (low + high) // 2
        if fits(metrics, text[:mid].rstrip() + ELLIPSIS, width, height):
            low = mid
        else:
            high = mid
    cut = text[:low]
    space = cut.rfind(" ")
    if space > len(cut) * 2 // 3:  # end on a whole word unless that loses too much
        cut = cut[:space]
    return cut.rstrip(" ,;:") + ELLIPSIS


class QtElidingLabel(QLabel):
    """A word-wrapped label of at most `max_lines` lines that ends its text with '…' when
    it does not fit, and then shows the whole text as its tooltip (unless given one).
    `text()` is the whole text; `shown_text()` what is on screen."""

    def __init__(self, parent=None, *, max_lines: int = 3) -> None:
        super().__init__(parent)
        self._full = ""
        self._tip = ""
        self._max_lines = max_lines
        self.setWordWrap(True)
        self.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's API
        self._full = text
        self._refit()

    def text(self) -> str:
        return self._full

    def shown_text(self) -> str:
        return super().text()

    def setToolTip(self, tip: str) -> None:  # noqa: N802
        self._tip = tip
        self._refit()

    def heightForWidth(self, width: int) -> int:  # noqa: N802
        metrics = self.fontMetrics()
        whole = metrics.boundingRect(QRect(0, 0, max(1, width), 1 << 20), _WRAP, self._full)
        return min(max(whole.height(), metrics.lineSpacing()), self._lines_height())

    def sizeHint(self) -> QSize:  # noqa: N802
        hint = super().sizeHint()
        return QSize(hint.width(), min(hint.height(), self._lines_height()))

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(self.fontMetrics().horizontalAdvance("M" * 6), self.fontMetrics().height())

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._refit()

    def _lines_height(self) -> int:
        return self.fontMetrics().lineSpacing() * self._max_lines

    def _refit(self) -> None:
        rect = self.contentsRect()
        shown = elide_wrapped(self.fontMetrics(), self._full, rect.width(), rect.height())
        if shown != super().text():
            QLabel.setText(self, shown)
        QLabel.setToolTip(self, self._tip or (self._full if shown != self._full else ""))


class QtElidingCombo(QComboBox):
    """A combo box that may be narrower than its longest item (its list still shows it
    whole) and then ends its current text with '…' instead of cutting it at the edge."""

    def __init__(self, parent=None, *, chars: int = 12) -> None:
        super().__init__(parent)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(chars)

    def shown_text(self) -> str:
        """The current text as painted: cut with '…' when the box is too narrow."""
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        return self._elided(option)

    def _elided(self, option: QStyleOptionComboBox) -> str:
        field = self.style().subControlRect(
            QStyle.ComplexControl.CC_ComboBox, option, QStyle.SubControl.SC_ComboBoxEditField, self
        )
        return self.fontMetrics().elidedText(
            option.currentText, Qt.TextElideMode.ElideRight, field.width()
        )

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        if self.isEditable():
            super().paintEvent(event)
            return
        painter = QStylePainter(self)
        option = QStyleOptionComboBox()
        self.initStyleOption(option)
        painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, option)
        option.currentText = self._elided(option)
        painter.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, option)
