"""MARS-Sep step by step: the small package every notebook imports."""

__version__ = "0.1.0"
