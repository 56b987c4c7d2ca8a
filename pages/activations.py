"""Activations: placeholder until the page is written."""

from explorer.ui import texts
from explorer.ui.layout import page_setup

session = page_setup("Activations", texts.ACTIVATIONS)
