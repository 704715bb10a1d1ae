"""``python -m amla_numerics``: the same CLI as the ``amla-numerics`` script."""

from amla_numerics.cli import console_main

if __name__ == "__main__":
    console_main()
