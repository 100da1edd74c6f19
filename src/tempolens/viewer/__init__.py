"""tempolens.viewer"""
