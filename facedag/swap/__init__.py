"""Putting the face in: convert (swap, mask, colour, paste) and render."""
