"""The `chitu` command line: main.py (the console script) over the engine's commands (chitu_diffusion.commands)
and the job commands (jobs.py and the modules it uses).

Imports neither torch nor a Kubernetes client until a command runs that needs one.
"""
