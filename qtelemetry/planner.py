"""Placeholder until the planner lands."""
import argparse


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    pass
