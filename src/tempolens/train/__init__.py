"""tempolens.train"""
