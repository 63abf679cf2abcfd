"""tfflows against TFP's built-in flows, side by side in one process.

    python -m benchmarks            # full run, writes BENCHMARKS.md
    python -m benchmarks --quick    # tiny sizes: checks the script, not speed
"""
