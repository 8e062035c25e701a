"""keepmail.spam"""
