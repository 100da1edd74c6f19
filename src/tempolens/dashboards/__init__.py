"""tempolens.dashboards"""
