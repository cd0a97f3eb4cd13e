"""labkit: a teaching kit on how services talk to each other."""
import logging

logging.getLogger("labkit").addHandler(logging.NullHandler())
# Tornado reports handler errors on its own loggers; with no handler anywhere,
# Python's last-resort handler would print them from the lab thread into
# whatever notebook cell runs next. A NullHandler keeps them silent unless the
# student configures logging.
logging.getLogger("tornado").addHandler(logging.NullHandler())
