"""tempolens.temporal"""
