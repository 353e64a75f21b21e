"""``pta-signin``: what a sign-in page does, on the command line."""
