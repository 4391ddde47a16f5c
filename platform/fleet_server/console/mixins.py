"""Access rules for console views: every page needs a role; changes need operator."""

from django.contrib.auth.mixins import LoginRequiredMixin, UserPassesTestMixin

from fleet_server.roles import can_operate, can_view


class ViewerRequiredMixin(LoginRequiredMixin, UserPassesTestMixin):
    def test_func(self) -> bool:
        return can_view(self.request.user)


class OperatorRequiredMixin(LoginRequiredMixin, UserPassesTestMixin):
    def test_func(self) -> bool:
        return can_operate(self.request.user)
