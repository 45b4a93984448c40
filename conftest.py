import os

# Chapters executed by nbval inherit this, so vitlib.book.setup() picks quick mode under the tests.
os.environ.setdefault("VITLIB_UNDER_TEST", "1")
