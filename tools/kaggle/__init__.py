"""python -m tools.kaggle: Kaggle from a laptop over the installed Kaggle CLI, one module per job.

    cli        the installed CLI: credentials, version check, an authenticated connection; KaggleError, exit codes
    build      the kernel folder a push sends: metadata, title and slug, injected parameters, embedded utils, checks
    calls      push, status, waiting and pull, through the CLI's Python API
    logs       what a run log says: the notebook's exception, the end of its traceback
    reports    the HTML report a pulled or rehearsed run folder ends with
    sweep      one kernel per variant within Kaggle's session limit and weekly GPU quota
    analyze    notebooks/analyze.ipynb pushed over training kernels' outputs
    rehearsal  the kernel push would send, run here in a simulated /kaggle
    commands   the command line, kaggle_cli (which __main__ runs)
"""
