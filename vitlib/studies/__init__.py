"""The chapters' experiments, one module per chapter, built on vitlib's models, training and
measuring tools (chapter 9, many devices: :mod:`vitlib.studies.scaling`)."""
