"""Many runs and what they add up to: train-or-reuse and statistics over runs (`runs.py`), configs x seeds x folds
into one comparison table (`sweep.py`, `emvgan-sweep`), and EMVGAN's defaults tuned on train holdouts (`tune.py`,
`emvgan-tune`)."""
