"""The web page: its layout and handlers, the chain's HTML and plots, downloads and share links.

The pipeline below never imports this package; ``app.py`` at the repository root builds the
page from it and launches it.
"""
