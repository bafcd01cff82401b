"""Runs on disk and how they execute.

Records, the run store, the queue, following, the executors (threads, worker processes,
Ray) and the GPUs.
"""
