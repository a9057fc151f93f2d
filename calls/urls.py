from django.contrib.auth import views as auth_views
from django.urls import path

from calls import views

urlpatterns = [
    path("", views.lobby, name="lobby"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
]
