"""`python -m rasa_server run ...` is `rasa run ...` with the speed-ups of speedups.py.

Every process that serves citizens starts this way (tools/stack.py, deploy/), and so do the
test stories (`make test-core`), so that they check the Rasa that answers citizens. `rasa train`
needs none of it and stays plain `rasa`.
"""

import sys

from rasa_server import speedups


def main() -> None:
    speedups.install()
    from rasa.__main__ import main as rasa_main

    sys.argv[0] = "rasa"
    rasa_main()


if __name__ == "__main__":
    main()
