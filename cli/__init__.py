"""The ``nas-*`` commands: thin leaves on top of the library layers.

Each module here parses one command's options, calls one library function and prints; nothing in
the library imports this package.
"""
