"""Acceptance data set: an object-centric order log shaped like OCEL 2.0 "Order Management"."""
