"""The back of the book: worked solutions of every notebook's exercises, one module per
notebook (``nb07`` for notebook 07). Read one after trying the exercise yourself."""
