"""Models this project trains and ships (see shapes_llava)."""
