"""Postatr (api.asmx, JSON): members through StartProcess (DataOnly only), campaign reports."""
