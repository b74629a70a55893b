"""Pure planning, no I/O: which nodes of a board a canvas run takes, in what order, and what each is made from."""
