"""`python -m lecun_jax.data build`: rebuild lecun_jax/data/shipped from the official files."""

import argparse
import json

from lecun_jax.data import build_shipped


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m lecun_jax.data",
                                     description="Rebuild lecun_jax/data/shipped from the official files.")
    parser.add_argument("command", choices=["build"])
    parser.add_argument("--mnist_dir", required=True)
    parser.add_argument("--usps_dir", required=True)
    args = parser.parse_args()
    print(json.dumps(build_shipped(args.mnist_dir, args.usps_dir), indent=2))


if __name__ == "__main__":
    main()
