"""Tests of core: atomic files and the HTML report page."""
