"""`cnntui serve`: the terminal UI in a browser, one cnntui per tab."""
