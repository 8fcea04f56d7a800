"""Acceptance data set: webhook bodies in the shapes Shopify, Stripe and EasyPost publish."""
