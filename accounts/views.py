from django.http import HttpRequest, HttpResponse


def signup(request: HttpRequest) -> HttpResponse:
    return HttpResponse("todo")


def login_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("todo")


def logout_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("todo")
