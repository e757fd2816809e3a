"""Experiments and the ``icldyn`` command: ``cli``, the main job (``mainjob``) and its
``report``, ``sweep``, Monte Carlo ``risks`` of the learned algorithm, ``taskdiversity`` with
``pretraining`` and the ``asymptotic`` comparison formula, and ``runfolder`` (atomic, staged,
resumable output folders shared by every long command). Imported by nothing but itself and
``nonlinear``."""
