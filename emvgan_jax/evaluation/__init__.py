"""A trained state -> numbers, rankings, figures and a page, the same code in training and in every tool.

`protocol.py` is the evaluation protocol and the results schema; `metrics.py` and `alignment.py` the numbers;
`search.py` exact top-k search; `retrieval.py` and `index.py` "which music fits this video?"; `run.py` a
checkpoint evaluated from its workdir; `plots.py` and `report.py` the figures and report.html; `peers.py` the
simple scikit-learn peers, scored by the same protocol.
"""
