# frozen_string_literal: true

module Asyncreply
  # Controller methods that make actions asynchronous behind the gateway.
  # The Railtie includes them in ActionController::Base and
  # ActionController::API.
  #
  #   class ReportsController < ApplicationController
  #     respond_to_async :export, timeout: 1.hour
  #
  #     def show
  #       @report = current_user.reports.find(params[:id])
  #       render async: @report.large?
  #     end
  #
  #     def export
  #       async_progress(10, "Collecting rows")
  #       # …
  #     end
  #   end
  #
  # A deferred request is answered <tt>202 Accepted</tt> with
  # <tt>Asyncreply-Defer</tt>, which the gateway turns into an operation;
  # the gateway then replays the same request, cookies included, and the
  # action runs for real (#async_replay? is true). Whatever the action did
  # before deferring happens again on the replay, and whatever it set on the
  # deferral's answer (cookies, session, flash) never reaches the client:
  # decide before doing real work.
  module Controller
    extend ActiveSupport::Concern

    included do
      helper_method :async_replay?, :async_operation_id if respond_to?(:helper_method)
    end

    class_methods do
      # Defers the first arrival of +actions+ (of every action when none is
      # named), as a +before_action+ would: declare it after the callbacks
      # that must refuse a request synchronously, such as authentication.
      #
      # Options:
      # [+if+, +unless+]
      #   Conditions, as callbacks take them: a method name or a lambda
      #   evaluated in the controller.
      # [+timeout+, +retention+, +wait+]
      #   The operation's settings (see Asyncreply::Deferral).
      #
      #   respond_to_async :show, if: -> { params[:format] == "pdf" }, timeout: 10.minutes
      def respond_to_async(*actions, **options)
        options.assert_valid_keys(:if, :unless, *Deferral::PARAMETERS)
        deferral = Deferral.new(**options.slice(*Deferral::PARAMETERS))

        callback_options = options.slice(:if, :unless)
        callback_options[:only] = actions if actions.any?
        before_action(callback_options) { async_defer_with(deferral) }
      end
    end

    # Rails' +render+, with one more option, <tt>async:</tt>, that decides
    # for this request: +true+ (or a Hash of Asyncreply::Deferral's
    # parameters) defers it when it can be deferred instead of rendering;
    # otherwise, and for +false+, it renders as Rails would without the
    # option. Calls without <tt>async:</tt> go to Rails untouched.
    #
    #   render json: @report, async: @report.slow?
    #   render :show, async: { timeout: 1.hour }
    def render(*args, &block)
      options = args.last
      return super unless options.is_a?(Hash) && options.key?(:async)

      deferral = Deferral.from_async_option(options[:async])
      # True, as +head+ returns, so that <tt>render … and return</tt> returns.
      return true if deferral && async_defer_with(deferral)

      rails_args = args[0...-1]
      rails_options = options.except(:async)
      rails_args << rails_options unless rails_options.empty?
      super(*rails_args, &block)
    end

    private
      # Defers this request when it can be, and returns true: the action must
      # then return without rendering. Returns false when the action should
      # go on: during the replay (where the same code, reached again, does
      # the work), and when the adapter does not defer (no gateway in front,
      # the inline adapter).
      #
      #   def create
      #     return if async_defer!(timeout: 1.hour)
      #     # the work
      #   end
      def async_defer!(timeout: nil, retention: nil, wait: nil)
        async_defer_with(Deferral.new(timeout: timeout, retention: retention, wait: wait))
      end

      # Whether this request is the replay of a deferred one.
      def async_replay?
        async_operation_id.present?
      end

      # The ID of the operation this replay belongs to, nil outside a replay.
      def async_operation_id
        request.headers[OPERATION_HEADER].presence
      end

      # Reports how far the replay has got, for the client polling the
      # operation: +percent+ is clamped to 0–100. Outside a replay it does
      # nothing, so actions can call it unconditionally. It never raises and
      # never delays the action more than Asyncreply.progress_timeout.
      def async_progress(percent, message = nil)
        return unless async_replay?

        Asyncreply.adapter.progress(request, percent.round.clamp(0, 100), message)
        nil
      end

      def async_defer_with(deferral)
        return false if async_replay? || !Asyncreply.adapter.defer(request, deferral)

        head :accepted, DEFER_HEADER => deferral.header_value
        true
      end
  end
end
